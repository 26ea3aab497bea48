//! Stop strings found in the generated text as it grows, in time linear in the text: each stop
//! string runs a Knuth-Morris-Pratt matcher fed byte by byte, whose state is also the longest
//! tail of the text that could still become that stop string (the part held back).

/// Longest stop string a request may give, in bytes.
pub const MAX_STOP_BYTES: usize = 4096;

/// One stop string's matcher: its bytes, their failure function, and the matched length.
#[derive(Debug)]
struct Matcher {
    pattern: Vec<u8>,
    /// `fail[i]`: length of the longest proper prefix of `pattern[..=i]` that is also its suffix.
    fail: Vec<usize>,
    matched: usize,
}

impl Matcher {
    fn new(pattern: &str) -> Self {
        let p = pattern.as_bytes().to_vec();
        let mut fail = vec![0; p.len()];
        let mut k = 0;
        for i in 1..p.len() {
            while k > 0 && p[i] != p[k] {
                k = fail[k - 1];
            }
            if p[i] == p[k] {
                k += 1;
            }
            fail[i] = k;
        }
        Self { pattern: p, fail, matched: 0 }
    }

    /// Feeds one byte; true when the whole pattern now ends here.
    fn feed(&mut self, b: u8) -> bool {
        let mut k = self.matched;
        while k > 0 && self.pattern[k] != b {
            k = self.fail[k - 1];
        }
        if self.pattern[k] == b {
            k += 1;
        }
        if k == self.pattern.len() {
            self.matched = self.fail[k - 1];
            return true;
        }
        self.matched = k;
        false
    }
}

/// Finds the first stop string in the text as it grows, holding back what could still become
/// one, so that no stop string (or its start) is ever sent.
#[derive(Debug, Default)]
pub struct StopScanner {
    matchers: Vec<Matcher>,
    /// Text received but not sent yet: always a tail that some stop string starts with.
    held: String,
    /// The stop string found, once one is.
    matched: Option<usize>,
}

impl StopScanner {
    pub fn new(stops: &[String]) -> Self {
        Self {
            matchers: stops.iter().map(|s| Matcher::new(s)).collect(),
            held: String::new(),
            matched: None,
        }
    }

    /// Adds `piece`; returns the text that can be sent now and whether a stop string was hit
    /// (then the returned text ends just before it).
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        if self.matchers.is_empty() {
            return (piece.to_string(), false);
        }
        let start = self.held.len();
        self.held.push_str(piece);
        for (i, &b) in self.held.as_bytes()[start..].iter().enumerate() {
            let end = start + i + 1;
            // The longest stop string ending here (the earliest start).
            let mut hit: Option<(usize, usize)> = None;
            for (k, m) in self.matchers.iter_mut().enumerate() {
                if m.feed(b) && hit.is_none_or(|(_, len)| m.pattern.len() > len) {
                    hit = Some((k, m.pattern.len()));
                }
            }
            if let Some((k, len)) = hit {
                self.matched = Some(k);
                // Everything before the stop string goes out; the rest is dropped.
                let out = self.held[..end - len].to_string();
                self.held.clear();
                return (out, true);
            }
        }
        // Hold back the longest tail that is a prefix of some stop string: it starts on a
        // character boundary, since a stop string does.
        let hold = self.matchers.iter().map(|m| m.matched).max().unwrap_or(0);
        let out: String = self.held.drain(..self.held.len() - hold).collect();
        (out, false)
    }

    /// Which stop string was found (its index), once one was.
    pub fn matched(&self) -> Option<usize> {
        self.matched
    }

    /// The held-back rest, at the end of a generation that hit no stop string.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: the whole text searched with `str::find` after every piece.
    fn reference(stops: &[String], pieces: &[&str]) -> String {
        let mut text = String::new();
        for p in pieces {
            text.push_str(p);
            let ends = stops.iter().filter_map(|s| text.find(s.as_str()).map(|a| (a + s.len(), a)));
            if let Some((_, at)) = ends.min() {
                return text[..at].to_string();
            }
        }
        text
    }

    fn scan(stops: &[String], pieces: &[&str]) -> String {
        let mut s = StopScanner::new(stops);
        let mut out = String::new();
        for p in pieces {
            let (t, hit) = s.push(p);
            out.push_str(&t);
            if hit {
                return out;
            }
        }
        out + &s.finish()
    }

    #[test]
    fn stop_strings_are_never_sent_even_across_pieces() {
        let mut s = StopScanner::new(&["END".into()]);
        let mut out = String::new();
        for p in ["abc E", "N", "D more"] {
            let (t, hit) = s.push(p);
            out.push_str(&t);
            if hit {
                break;
            }
        }
        assert_eq!(out, "abc ");
        let mut s = StopScanner::new(&["xyz".into()]);
        let (a, _) = s.push("hello x");
        assert_eq!(a, "hello ");
        assert_eq!(s.finish(), "x");
    }

    #[test]
    fn matches_a_plain_search_on_random_texts() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let alphabet = ["a", "b", "ab", "é", "aa", "b é"];
        for _ in 0..2000 {
            let stops: Vec<String> = (0..rng.gen_range(1..4))
                .map(|_| (0..rng.gen_range(1..5)).map(|_| alphabet[rng.gen_range(0..6)]).collect())
                .collect();
            let pieces: Vec<&str> =
                (0..rng.gen_range(0..12)).map(|_| alphabet[rng.gen_range(0..6)]).collect();
            assert_eq!(scan(&stops, &pieces), reference(&stops, &pieces), "{stops:?} {pieces:?}");
        }
    }

    /// Long stop strings that keep almost matching cost time linear in the text.
    #[test]
    fn long_near_misses_stay_linear() {
        let stop = "a".repeat(MAX_STOP_BYTES - 1) + "b";
        let stops = vec![stop; 4];
        let mut s = StopScanner::new(&stops);
        let t = std::time::Instant::now();
        let mut sent = 0;
        for _ in 0..20_000 {
            sent += s.push("aaaa").0.len();
        }
        assert_eq!(sent + s.finish().len(), 80_000);
        assert!(t.elapsed().as_secs_f64() < 2.0, "{:?}", t.elapsed());
    }
}
