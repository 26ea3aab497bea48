//! The vocabulary of synthetic models: GPT-2's byte-level alphabet (so any text encodes), the
//! end-of-text token, and, where the model's vocabulary has room, printable word pieces built by
//! BPE merges from common English words. A synthetic model's random weights pick tokens all but
//! uniformly; with word pieces and the unprintable bytes kept out of reach (see `synth`), what it
//! writes is readable word salad instead of control bytes and broken UTF-8.

use std::collections::BTreeSet;

/// Common English words the pieces are built from.
const WORDS: &str = "the of and to in is was that for it as with be on not he by at this are or \
    his from but have an they which one you were her all she there would their we him been has \
    when who will more no if out so said what up its about into than them can only other new \
    some could time these two may then do first any my now such like our over man me even most \
    made after also did many before must through back years where much your way well down \
    should because each just those people how too little state good very make world still own \
    see men work long get here between both life being under never day same another know while \
    last might us great old year off come since against go came right used take three himself \
    few house use during without again place around however home small found mrs thought went \
    say part once general high upon school every does got united left number course war until \
    always away something fact though water less public put think almost hand enough far took \
    head yet government system better set told nothing night end why called didn eyes find going \
    look asked later knew point next city give group toward young let room side social present \
    given several order national possible rather second face per among form important often \
    things looked early white case john become large big need four within felt along children \
    saw best church ever least power development light thing seemed family interest want \
    members mind country area others done turned although open god service certain kind problem \
    began different door thus help sense means whole matter perhaps itself york times law human \
    line above name example action company hands local show whether five history gave today \
    either act feet across taken past quite anything seen having death experience body word half \
    really field am car words already themselves information tell together college shall money \
    period held keep sure real probably free seems political cannot behind miss question air \
    office making brought whose special major heard problems ago became federal moment study \
    available known result street economic boy position reason change south board individual \
    job areas society west close turn love community true court force full seem am art river \
    stone light ship sea cloud rain wind fire garden forest road bridge tower window letter";

/// GPT-2's bytes-to-unicode map: every byte to one printable character.
pub fn bytes_to_unicode() -> Vec<char> {
    let mut bs: Vec<u32> =
        (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut map = vec!['\0'; 256];
    for (b, c) in bs.into_iter().zip(cs) {
        map[b as usize] = char::from_u32(c).expect("GPT-2 byte map stays in the BMP");
    }
    map
}

/// Whether byte `b` prints on its own (ASCII letters, digits, punctuation, space, newline).
pub fn printable_byte(b: u8) -> bool {
    b == b'\n' || (0x20..0x7F).contains(&b)
}

/// The word pieces (in byte-level form, `Ġ` for a leading space) and their merges, at most
/// `room` pieces: each word with a leading space, built left to right, every prefix a piece.
pub fn word_pieces(room: usize) -> (Vec<String>, Vec<(String, String)>) {
    let map = bytes_to_unicode();
    let mut seen = BTreeSet::new();
    let (mut pieces, mut merges) = (Vec::new(), Vec::new());
    'words: for w in WORDS.split_whitespace() {
        let chars: Vec<char> =
            std::iter::once(' ').chain(w.chars()).map(|c| map[c as usize]).collect();
        let mut prefix = chars[0].to_string();
        for &c in &chars[1..] {
            let next = format!("{prefix}{c}");
            if seen.insert(next.clone()) {
                if pieces.len() == room {
                    break 'words;
                }
                merges.push((prefix.clone(), c.to_string()));
                pieces.push(next.clone());
            }
            prefix = next;
        }
    }
    (pieces, merges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_printable_and_every_one_has_its_merge() {
        let (pieces, merges) = word_pieces(10_000);
        assert!(pieces.len() > 1000, "{}", pieces.len());
        assert_eq!(pieces.len(), merges.len());
        for (p, (a, b)) in pieces.iter().zip(&merges) {
            assert_eq!(&format!("{a}{b}"), p);
        }
        let (few, _) = word_pieces(7);
        assert_eq!(few.len(), 7);
    }
}
