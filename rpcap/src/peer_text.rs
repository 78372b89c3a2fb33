//! Text a peer sent (an ERROR message's text, an interface or user name), as
//! a log line may show it: at most [`MAX_SHOWN`] characters, control and
//! other non-printable characters escaped, the cut marked.
//!
//! A peer controls these bytes: up to 1 MiB per message, newlines that would
//! forge log lines, terminal escapes, bidi overrides. Every log line that
//! shows peer text goes through [`PeerText`]; what is sent back to a peer is
//! cut separately (`Message::error`).

use std::fmt::{self, Write};

/// Longest text shown, in characters of the escaped form (the marker of a
/// cut comes on top).
pub const MAX_SHOWN: usize = 256;

/// Peer text for a log line. `{}` shows it escaped and cut;
/// `{:?}` the same between double quotes (inner quotes escaped).
///
/// Escapes are those of Rust's `escape_debug` (`\n`, `\t`, `\u{202e}`…),
/// with a backslash shown as `\\`, so the shown text is unambiguous; bytes
/// that are not UTF-8 show as `\xNN`. A cut falls between characters,
/// never inside a character or an escape, and ends in
/// `...(N more bytes)`.
#[derive(Clone, Copy)]
pub struct PeerText<'a>(&'a [u8]);

impl<'a> PeerText<'a> {
    pub fn new(text: &'a str) -> PeerText<'a> {
        PeerText(text.as_bytes())
    }

    /// Bytes that may not be UTF-8 (a user name).
    pub fn bytes(bytes: &'a [u8]) -> PeerText<'a> {
        PeerText(bytes)
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, quoted: bool) -> fmt::Result {
        let mut shown = 0;
        let mut consumed = 0;
        let mut piece = String::new();
        for chunk in self.0.utf8_chunks() {
            let invalid = chunk.invalid().iter().map(|b| (Err(*b), 1));
            let valid = chunk.valid().chars().map(|c| (Ok(c), c.len_utf8()));
            for (item, len) in valid.chain(invalid) {
                piece.clear();
                match item {
                    Ok('"') if quoted => piece.push_str("\\\""),
                    // Quotes are fine unquoted; escape_debug would escape them.
                    Ok(c @ ('"' | '\'')) => piece.push(c),
                    Ok(c) => write!(piece, "{}", c.escape_debug())?,
                    Err(b) => write!(piece, "\\x{b:02x}")?,
                }
                let n = piece.chars().count();
                if shown + n > MAX_SHOWN {
                    if quoted {
                        f.write_char('"')?;
                    }
                    return write!(f, "...({} more bytes)", self.0.len() - consumed);
                }
                f.write_str(&piece)?;
                shown += n;
                consumed += len;
            }
        }
        if quoted {
            f.write_char('"')?;
        }
        Ok(())
    }
}

impl fmt::Display for PeerText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, false)
    }
}

impl fmt::Debug for PeerText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        self.write(f, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_shows_as_is() {
        assert_eq!(PeerText::new("eth0").to_string(), "eth0");
        assert_eq!(
            PeerText::new("it's \"x\" — é").to_string(),
            "it's \"x\" — é"
        );
        assert_eq!(format!("{:?}", PeerText::new("eth0")), "\"eth0\"");
        assert_eq!(format!("{:?}", PeerText::new("a\"b")), r#""a\"b""#);
    }

    #[test]
    fn control_and_invisible_characters_are_escaped() {
        let forged = "x\nWARN fake line\r\t\x1b[31m\0\u{202e}\u{200b}\\";
        assert_eq!(
            PeerText::new(forged).to_string(),
            r"x\nWARN fake line\r\t\u{1b}[31m\0\u{202e}\u{200b}\\"
        );
        // Not UTF-8: each bad byte on its own.
        assert_eq!(PeerText::bytes(b"ab\xff\xc3c").to_string(), r"ab\xff\xc3c");
    }

    #[test]
    fn long_text_is_cut_and_marked() {
        let long = "a".repeat(1 << 20);
        let shown = PeerText::new(&long).to_string();
        let marker = format!("...({} more bytes)", (1 << 20) - MAX_SHOWN);
        assert_eq!(shown, format!("{}{marker}", "a".repeat(MAX_SHOWN)));
        // Exactly MAX_SHOWN: no cut.
        let fits = "b".repeat(MAX_SHOWN);
        assert_eq!(PeerText::new(&fits).to_string(), fits);
        let quoted = format!("{:?}", PeerText::new(&long));
        assert!(
            quoted.starts_with('"') && quoted.contains("a\"...("),
            "{quoted}"
        );
    }

    #[test]
    fn the_cut_falls_between_characters_and_escapes() {
        // Two-byte characters: 256 of them shown, the rest counted in bytes.
        let e = "é".repeat(300);
        let shown = PeerText::new(&e).to_string();
        assert_eq!(shown, format!("{}...(88 more bytes)", "é".repeat(256)));
        // An escape (`\n`, two characters) never straddles the cut.
        let s = format!("{}\n", "a".repeat(MAX_SHOWN - 1));
        assert_eq!(
            PeerText::new(&s).to_string(),
            format!("{}...(1 more bytes)", "a".repeat(MAX_SHOWN - 1))
        );
        let s = "\u{1}".repeat(100); // `\u{1}` is 5 characters
        let shown = PeerText::new(&s).to_string();
        assert_eq!(shown, format!("{}...(49 more bytes)", r"\u{1}".repeat(51)));
    }

    #[test]
    fn any_input_shows_bounded_and_printable() {
        // Every byte value, in every position around the cut.
        let all: Vec<u8> = (0..=255u8).cycle().take(2000).collect();
        for start in 0..300 {
            let shown = PeerText::bytes(&all[start..]).to_string();
            let (text, _) = shown.split_once("...(").unwrap_or((&shown, ""));
            assert!(text.chars().count() <= MAX_SHOWN);
            assert!(shown.chars().all(|c| !c.is_control()), "{shown:?}");
        }
    }
}
